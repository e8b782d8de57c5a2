-- Runs with the default search_path, whatever 001 set.
CREATE TABLE after_set (x int);
