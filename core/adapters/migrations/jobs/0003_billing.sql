-- Billing: whether an account hold was placed for the job (its end must then be settled), and
-- the price units its finishing attempt reported, kept with the outcome so a settlement lost in
-- a crash can be made later from the job alone. Constant defaults: no table rewrite.
ALTER TABLE jobs ADD COLUMN billed BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE jobs ADD COLUMN usage_units BIGINT NOT NULL DEFAULT 0;
