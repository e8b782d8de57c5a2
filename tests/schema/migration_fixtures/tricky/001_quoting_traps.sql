-- Every trap of a runner that splits on ';'. A comment; with a semicolon and a 'quote.
/* a block comment; /* nested; */ still inside; */
CREATE SCHEMA "odd;schema";

CREATE TABLE "odd;schema"."Weird;Name" (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "semi;col" text NOT NULL DEFAULT 'a;b',
    "quo""ted" text DEFAULT E'it\'s; escaped\n',
    dollar text DEFAULT $$dollar; 'quoted' text$$,
    tagged text DEFAULT $tag$ $$ nested $$ ; $tag$,
    note text
);

DO $outer$
DECLARE
    stmt text := $inner$CREATE TABLE "odd;schema".made_in_do (x int)$inner$;
BEGIN
    EXECUTE stmt;
    RAISE NOTICE 'done; really';
END
$outer$;

CREATE FUNCTION "odd;schema".plus_two(a integer) RETURNS integer
LANGUAGE sql
BEGIN ATOMIC
    SELECT a + 1;
    SELECT a + 2;
END;

CREATE FUNCTION "odd;schema".fill_note() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    NEW.note := 'set; by ' || TG_NAME || $q$; 'trigger'$q$;
    RETURN NEW;
END
$fn$;

CREATE TRIGGER fill_note BEFORE INSERT ON "odd;schema"."Weird;Name"
    FOR EACH ROW EXECUTE FUNCTION "odd;schema".fill_note();

SAVEPOINT inside;
INSERT INTO "odd;schema"."Weird;Name" ("semi;col") VALUES ('v;1'), (U&'d\0061t\+000061;');
RELEASE SAVEPOINT inside;

-- A SET here must not leak into the next file: each file gets a fresh connection.
SET search_path = "odd;schema";
