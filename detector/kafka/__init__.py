"""Kafka plumbing both workers share: topics, broker lists, the acknowledged output producer, the
metrics/health endpoint, and leaving without a commit. `detector.stream` (the request worker) and
`detector.send` (the send worker) depend on this package and never on each other."""
