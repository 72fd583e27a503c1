"""Domain events, the rules that act on them, and signed outbound webhooks."""
