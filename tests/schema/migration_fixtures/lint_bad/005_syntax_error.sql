CREATE TABLE ok (x int);
CREATE TABEL broken (x int);
