"""One module per provider API the sandbox imitates; each exposes `add_routes(app)`."""
