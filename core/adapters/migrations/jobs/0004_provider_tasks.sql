-- The provider task a running attempt submitted (`{"model": ..., "id": ...}`), kept across
-- attempts so a redelivered job resumes polling it instead of paying for a second generation.
-- NULL for jobs that never submitted one, and for every row from before this migration.
ALTER TABLE jobs ADD COLUMN provider_task JSONB;
