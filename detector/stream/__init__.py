"""The Kafka side: a Faust worker that feeds batches of events to the engine (see `detector.stream.app`)."""
