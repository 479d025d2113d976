//! The rohrpost-js subscription flow against the real host and the subscriptions plugin.
