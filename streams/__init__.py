"""Event schemas, topics, producers and the embedded broker: the upstream edge of ai-signals."""
