-- The guard every write runs right before it commits (storage/pg_pool.py): the service
-- answers 503 once a request's deadline has passed, so a write the server reaches later
-- (it was frozen, or the packets were late) must not commit. The deadline is on the
-- server's clock, converted by the service with an offset that errs early.
CREATE OR REPLACE FUNCTION sardag_commit_deadline(deadline timestamptz) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF clock_timestamp() > deadline THEN
        RAISE EXCEPTION 'the client stopped waiting for this write at %', deadline
            USING ERRCODE = 'query_canceled';
    END IF;
END
$$;
