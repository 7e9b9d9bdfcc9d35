//! Placeholder: TLS configuration (being written).
