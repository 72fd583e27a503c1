"""The imports benchmark: a million recipients from one NDJSON upload beside a plain COPY of the same rows,
then the million-recipient send in two calls. Run with `python -m bench.imports.run --rows 1000000`."""
