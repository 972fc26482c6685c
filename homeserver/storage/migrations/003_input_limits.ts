import type { Knex } from 'knex';

/**
 * Reads that must not break on what got in before the edge refused it. Filters on `contains_url`
 * cast the stored JSON to jsonb, which fails for good on an event holding \u0000 or a lone
 * surrogate escape; the flag is now a column, set when an event is written (as Synapse keeps
 * events.contains_url), and older rows fall back to a function that cannot fail.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    -- content.url is a string (Synapse's definition); NULL for rows written before this column.
    ALTER TABLE events ADD COLUMN contains_url BOOLEAN;

    -- The same flag from the JSON text, for rows without the column; JSON that jsonb refuses
    -- (\\u0000, lone surrogates) counts as having no url instead of failing the whole read.
    CREATE FUNCTION event_contains_url(event_json TEXT) RETURNS BOOLEAN
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
    BEGIN
      RETURN coalesce(jsonb_typeof(event_json::jsonb -> 'content' -> 'url') = 'string', FALSE);
    EXCEPTION WHEN others THEN
      RETURN FALSE;
    END
    $$;
  `);
}
