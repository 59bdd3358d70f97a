"""Route groups: ``openai`` (/v1), ``native`` (/api), ``studio`` (the web page at /)."""
