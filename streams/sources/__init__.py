"""Live sources: producers that poll the public record (Hugging Face Hub, Epoch AI, SEC EDGAR Form D)
and turn what is new into SPEC §2 events. One module per source; ``polite`` is the HTTP behaviour
they share, ``runner`` polls them and moves their cursors once the pipeline has stored the events."""
