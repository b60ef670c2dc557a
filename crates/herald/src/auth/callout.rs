//! The HTTP auth callout: one POST per CONNECT whose answer is not cached; answers cached honouring `Cache-Control: max-age`; concurrent look-ups for one key coalesced.
