-- PostgreSQL keeps its (file_id, at) index: its log records changes, not whole pages, so a
-- scattered index costs little there (the SQLite side of this migration says why SQLite's
-- does not). A link's uses (its page lists them) were found by reading the whole trail.
CREATE INDEX audit_events_link ON audit_events (link_id, at) WHERE link_id IS NOT NULL;
