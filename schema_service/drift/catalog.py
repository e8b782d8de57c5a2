"""What `verify` compares: one catalog query per kind of object, each giving (qualified name, definition).

Definitions come from PostgreSQL's own deparsers (pg_get_*def, format_type, pg_get_expr) so that two
databases built by the same SQL give the same text. Left out: the system schemas, the engine's own
schema `schema_service`, objects that belong to an extension (the extension and its version are
compared instead), and partitions' own indexes, constraints and triggers (a partition is compared as
a child of its parent: a missing or changed one is drift, one the service added at run time is not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import asyncpg

USER_SCHEMA = "{0} NOT IN ('pg_catalog', 'information_schema', 'schema_service') AND {0} NOT LIKE 'pg\\_%'"
_SCHEMAS = USER_SCHEMA.format("n.nspname")


def _not_extension(catalog: str, oid: str) -> str:
    return (
        f"NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = '{catalog}'::regclass "
        f"AND e.objid = {oid} AND e.deptype = 'e')"
    )


_REL = f"{_SCHEMAS} AND NOT c.relispartition AND {_not_extension('pg_class', 'c.oid')}"
_FROM_CLASS = "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"


def _acl(acl: str, kind: str, owner: str) -> str:
    """Privileges as `grantee:privilege[*]` (the owner as `owner`, so the owning role's name does not matter)."""
    return f"""(SELECT string_agg(DISTINCT CASE WHEN x.grantee = {owner} THEN 'owner'
                                              WHEN x.grantee = 0 THEN 'PUBLIC'
                                              ELSE x.grantee::regrole::text END
                                         || ':' || x.privilege_type || CASE WHEN x.is_grantable THEN '*' ELSE '' END,
                                  ' ')
                FROM aclexplode(coalesce({acl}, acldefault({kind}, {owner}))) x)"""


_COLLATION_OF = "(SELECT format('%I.%I', cn.nspname, co.collname) FROM pg_collation co " + (
    "JOIN pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = {0})"
)

CATALOG_QUERIES: dict[str, str] = {
    "schema": f"SELECT quote_ident(n.nspname), '' FROM pg_namespace n WHERE {_SCHEMAS}",
    "table": f"""SELECT format('%I.%I', n.nspname, c.relname),
                    CASE c.relkind WHEN 'p' THEN 'PARTITION BY ' || pg_get_partkeydef(c.oid) ELSE 'heap' END
                    || CASE c.relpersistence WHEN 'u' THEN ' UNLOGGED' ELSE '' END
                    || CASE WHEN c.relrowsecurity THEN ' ROW LEVEL SECURITY' ELSE '' END
                    || CASE WHEN c.relforcerowsecurity THEN ' FORCED' ELSE '' END
                 {_FROM_CLASS} WHERE c.relkind IN ('r', 'p', 'f') AND {_REL}""",
    "partition": f"""SELECT format('%I.%I', n.nspname, c.relname),
                        format('of %I.%I %s', pn.nspname, p.relname, pg_get_expr(c.relpartbound, c.oid))
                     {_FROM_CLASS} JOIN pg_inherits i ON i.inhrelid = c.oid JOIN pg_class p ON p.oid = i.inhparent
                     JOIN pg_namespace pn ON pn.oid = p.relnamespace
                     WHERE c.relispartition AND {_SCHEMAS}""",
    "view": f"""SELECT format('%I.%I', n.nspname, c.relname), pg_get_viewdef(c.oid)
                {_FROM_CLASS} WHERE c.relkind IN ('v', 'm') AND {_REL}""",
    "sequence": f"""SELECT format('%I.%I', n.nspname, c.relname),
                       format('%s increment %s min %s max %s cycle %s', format_type(s.seqtypid, NULL),
                              s.seqincrement, s.seqmin, s.seqmax, s.seqcycle)
                       || coalesce((SELECT format(' owned by %I.%I.%I', tn.nspname, t.relname, a.attname)
                                    FROM pg_depend d JOIN pg_class t ON t.oid = d.refobjid
                                    JOIN pg_namespace tn ON tn.oid = t.relnamespace
                                    JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                                    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                      AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')), '')
                    {_FROM_CLASS} JOIN pg_sequence s ON s.seqrelid = c.oid WHERE {_REL}""",
    "column": f"""SELECT format('%I.%I.%I', n.nspname, c.relname, a.attname),
                     format_type(a.atttypid, a.atttypmod)
                     || CASE WHEN a.attcollation <> t.typcollation
                             THEN ' COLLATE ' || {_COLLATION_OF.format("a.attcollation")} ELSE '' END
                     || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
                     || CASE WHEN a.attgenerated = 's' THEN ' GENERATED ALWAYS AS ' ELSE ' DEFAULT ' END
                     || coalesce(pg_get_expr(d.adbin, d.adrelid), 'none')
                     || CASE a.attidentity WHEN 'a' THEN ' IDENTITY ALWAYS' WHEN 'd' THEN ' IDENTITY BY DEFAULT'
                        ELSE '' END
                  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                  JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_type t ON t.oid = a.atttypid
                  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                  WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'f', 'v', 'm') AND {_REL}""",
    "constraint": f"""SELECT format('%I.%I.%I', n.nspname, c.relname, k.conname), pg_get_constraintdef(k.oid)
                      FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
                      JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {_REL}""",
    "index": f"""SELECT format('%I.%I', n.nspname, c.relname),
                    pg_get_indexdef(i.indexrelid) || CASE WHEN i.indisvalid THEN '' ELSE ' INVALID' END
                 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE NOT t.relispartition AND {_REL}""",
    "trigger": f"""SELECT format('%I.%I.%I', n.nspname, c.relname, g.tgname),
                      pg_get_triggerdef(g.oid) || CASE g.tgenabled WHEN 'D' THEN ' DISABLED' ELSE '' END
                   FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE NOT g.tgisinternal AND {_REL}""",
    "policy": f"""SELECT format('%I.%I.%I', n.nspname, c.relname, p.polname),
                     format('%s FOR %s TO %s USING (%s) WITH CHECK (%s)',
                            CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END, p.polcmd,
                            (SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE r::regrole::text END, ', ' ORDER BY 1)
                             FROM unnest(p.polroles) r),
                            coalesce(pg_get_expr(p.polqual, p.polrelid), ''),
                            coalesce(pg_get_expr(p.polwithcheck, p.polrelid), ''))
                  FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
                  JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {_REL}""",
    "function": f"""SELECT format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
                       pg_get_functiondef(p.oid)
                    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                    WHERE p.prokind IN ('f', 'p', 'w') AND {_SCHEMAS} AND {_not_extension("pg_proc", "p.oid")}""",
    "enum": f"""SELECT format('%I.%I', n.nspname, t.typname),
                   string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
                FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid JOIN pg_namespace n ON n.oid = t.typnamespace
                WHERE {_SCHEMAS} AND {_not_extension("pg_type", "t.oid")} GROUP BY n.nspname, t.typname""",
    "domain": f"""SELECT format('%I.%I', n.nspname, t.typname),
                     format_type(t.typbasetype, t.typtypmod)
                     || CASE WHEN t.typcollation <> b.typcollation
                             THEN ' COLLATE ' || {_COLLATION_OF.format("t.typcollation")} ELSE '' END
                     || CASE WHEN t.typnotnull THEN ' NOT NULL' ELSE '' END
                     || coalesce(' DEFAULT ' || t.typdefault, '')
                     || coalesce((SELECT string_agg(format(' CONSTRAINT %I %s', k.conname, pg_get_constraintdef(k.oid)),
                                                    '' ORDER BY k.conname)
                                  FROM pg_constraint k WHERE k.contypid = t.oid), '')
                  FROM pg_type t JOIN pg_type b ON b.oid = t.typbasetype JOIN pg_namespace n ON n.oid = t.typnamespace
                  WHERE t.typtype = 'd' AND {_SCHEMAS} AND {_not_extension("pg_type", "t.oid")}""",
    "type": f"""SELECT format('%I.%I', n.nspname, t.typname),
                   (SELECT string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', '
                                      ORDER BY a.attnum)
                    FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped)
                FROM pg_type t JOIN pg_class c ON c.oid = t.typrelid AND c.relkind = 'c'
                JOIN pg_namespace n ON n.oid = t.typnamespace
                WHERE {_SCHEMAS} AND {_not_extension("pg_type", "t.oid")}""",
    "collation": f"""SELECT format('%I.%I', n.nspname, c.collname),
                        (to_jsonb(c) - 'oid' - 'collname' - 'collnamespace' - 'collowner' - 'collversion')::text
                     FROM pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace
                     WHERE {_SCHEMAS} AND {_not_extension("pg_collation", "c.oid")}""",
    "extension": """SELECT quote_ident(e.extname), e.extversion || ' in schema ' || quote_ident(n.nspname)
                    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname <> 'plpgsql'""",
    "comment": f"""SELECT o.type || ' ' || o.identity, d.description
                   FROM pg_description d, LATERAL pg_identify_object(d.classoid, d.objoid, d.objsubid) o
                   WHERE d.classoid = ANY (ARRAY['pg_class', 'pg_proc', 'pg_type', 'pg_namespace', 'pg_constraint',
                                                 'pg_trigger', 'pg_policy', 'pg_collation']::regclass[])
                     AND {USER_SCHEMA.format("coalesce(o.schema, o.identity)")}
                     AND NOT EXISTS (SELECT 1 FROM pg_class p WHERE d.classoid = 'pg_class'::regclass
                                     AND p.oid = d.objoid AND p.relispartition)
                     AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = d.classoid AND e.objid = d.objoid
                                     AND e.deptype = 'e')""",
}

# acldefault()'s object kinds: the privileges an object has before any GRANT or REVOKE.
_RELATION_ACL = "CASE c.relkind WHEN 'S' THEN 's'::\"char\" ELSE 'r'::\"char\" END"
_SCHEMA_ACL = "'n'::\"char\""
_FUNCTION_ACL = "'f'::\"char\""

# Privileges: on by default, `--ignore-grants` leaves them out where other tools grant on the side.
GRANT_QUERIES: dict[str, str] = {
    "grant": f"""SELECT 'table ' || format('%I.%I', n.nspname, c.relname),
                    {_acl("c.relacl", _RELATION_ACL, "c.relowner")}
                 {_FROM_CLASS} WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S') AND {_REL}
                 UNION ALL
                 SELECT 'schema ' || quote_ident(n.nspname), {_acl("n.nspacl", _SCHEMA_ACL, "n.nspowner")}
                 FROM pg_namespace n WHERE {_SCHEMAS}
                 UNION ALL
                 SELECT 'function ' || format('%I.%I(%s)', n.nspname, p.proname,
                                              pg_get_function_identity_arguments(p.oid)),
                        {_acl("p.proacl", _FUNCTION_ACL, "p.proowner")}
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                 WHERE p.prokind IN ('f', 'p', 'w') AND {_SCHEMAS} AND {_not_extension("pg_proc", "p.oid")}""",
}

# Kinds whose extra objects in the live database are not drift: partitions are added at run time.
ADDED_AT_RUN_TIME = frozenset({"partition"})

Snapshot = dict[tuple[str, str], str]
DiffKind = Literal["missing", "unexpected", "changed"]


@dataclass(frozen=True)
class Difference:
    object_kind: str
    object_name: str
    kind: DiffKind
    expected: str
    actual: str

    def __str__(self) -> str:
        if self.kind == "missing":
            return f"missing {self.object_kind} {self.object_name}: expected {self.expected}"
        if self.kind == "unexpected":
            return f"unexpected {self.object_kind} {self.object_name}: {self.actual}"
        return f"changed {self.object_kind} {self.object_name}: expected {self.expected}, found {self.actual}"


def diff(expected: Snapshot, actual: Snapshot) -> list[Difference]:
    """Object by object, sorted by kind then name."""
    out = []
    for key in sorted(expected.keys() | actual.keys()):
        want, have = expected.get(key), actual.get(key)
        if want == have or (want is None and key[0] in ADDED_AT_RUN_TIME):
            continue
        kind: DiffKind = "missing" if have is None else "unexpected" if want is None else "changed"
        out.append(Difference(key[0], key[1], kind, want or "", have or ""))
    return out


async def snapshot(conn: asyncpg.Connection, *, grants: bool = True) -> Snapshot:
    """Every compared object of the database: (kind, qualified name) -> normalised definition."""
    found: Snapshot = {}
    queries = {**CATALOG_QUERIES, **(GRANT_QUERIES if grants else {})}
    for kind, query in queries.items():
        for name, definition in await conn.fetch(query):
            found[(kind, name)] = definition or ""
    return found
