//! Wire types of the agent ↔ portal protocol (docs/protocol.md).
