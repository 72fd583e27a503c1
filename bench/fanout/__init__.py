"""The fan-out benchmark: one notification to N recipients on in-app + email, against a naive
baseline and a raw COPY ceiling. Run with `python -m bench.fanout.run --recipients 100000`."""
