"""Provenance: where a piece of content came from, written into it and kept beside it.

``labels`` writes and checks the labels that China's Measures for Labelling AI-Generated Synthetic
Content (in force since 2025-09-01) and the mandatory standard GB 45438-2025 require: the implicit
label of Annex E (a metadata field ``AIGC`` holding a JSON object: ``Label``, ``ContentProducer``,
``ProduceID``, ``ReservedCode1``, ``ContentPropagator``, ``PropagateID``, ``ReservedCode2``) in PNG,
JPEG and WebP files (XMP, PNG text chunks, JPEG comments), JSON, JSONL and CSV exports and text
files, and the explicit labels people see (a text prefix or suffix, an image mark). ``annex`` is the
Annex E object itself, ``images`` the image containers, ``marks`` the visible image mark.

``audit`` is the append-only, hash-chained log of safety decisions (the catalog's ``audit_log``
table): one row per decision, the SHA-256 of the text and a redacted excerpt, never raw PII.

Core: nothing here imports a surface (server, CLI) or the engine. C2PA signing is not done here.
"""
