//! Many nodes as one broker, joined through NATS: topics as subjects (`subject`).

pub mod subject;
