"""An Event Hubs emulator that the unmodified azure-eventhub SDK talks to."""
