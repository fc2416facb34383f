// The mongo healthcheck: initiates the single-node replica set rs0 on first run, then reports
// healthy once this node is the writable primary (change streams and transactions need rs0).
try {
  rs.status();
} catch (error) {
  rs.initiate({ _id: "rs0", members: [{ _id: 0, host: "mongo:27017" }] });
}
quit(db.hello().isWritablePrimary ? 0 : 1);
