//! Iceberg table and view metadata: the model, creation, and the commit engine.
