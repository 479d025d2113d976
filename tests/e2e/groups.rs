//! Groups and change notifications: membership, fan-out, slow receivers.
