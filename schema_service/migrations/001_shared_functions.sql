-- Helpers shared by the application tables.

-- Keeps updated_at honest whatever client writes the row; attached as a BEFORE UPDATE trigger.
CREATE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

COMMENT ON FUNCTION set_updated_at() IS 'BEFORE UPDATE trigger: sets updated_at to now()';
