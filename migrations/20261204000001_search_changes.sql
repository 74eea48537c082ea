-- Every committed change to what search reads (a page row or a chunk row) is announced on the
-- `pagestream_search` channel as `<source uuid>/<page id>`, so that an api's in-process text index
-- re-reads just that page. Postgres delivers a notification only when its transaction commits, in
-- commit order, and drops repeats of one payload within a transaction: a page's 20 chunk rows
-- announce it once.
CREATE FUNCTION pagestream_announce_search_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('pagestream_search', OLD.source_id::text || '/' || OLD.page_id);
    ELSE
        PERFORM pg_notify('pagestream_search', NEW.source_id::text || '/' || NEW.page_id);
        IF TG_OP = 'UPDATE' AND (OLD.source_id, OLD.page_id) IS DISTINCT FROM (NEW.source_id, NEW.page_id) THEN
            PERFORM pg_notify('pagestream_search', OLD.source_id::text || '/' || OLD.page_id);
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER confluence_pages_search_change
    AFTER INSERT OR UPDATE OR DELETE ON confluence_pages
    FOR EACH ROW EXECUTE FUNCTION pagestream_announce_search_change();

CREATE TRIGGER chunks_search_change
    AFTER INSERT OR UPDATE OR DELETE ON chunks
    FOR EACH ROW EXECUTE FUNCTION pagestream_announce_search_change();

-- A TRUNCATE fires no row trigger: it announces `*`, everything changed.
CREATE FUNCTION pagestream_announce_search_reset() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pagestream_search', '*');
    RETURN NULL;
END;
$$;

CREATE TRIGGER confluence_pages_search_reset
    AFTER TRUNCATE ON confluence_pages
    FOR EACH STATEMENT EXECUTE FUNCTION pagestream_announce_search_reset();

CREATE TRIGGER chunks_search_reset
    AFTER TRUNCATE ON chunks
    FOR EACH STATEMENT EXECUTE FUNCTION pagestream_announce_search_reset();
