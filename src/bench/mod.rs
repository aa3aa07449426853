//! `bingsan bench`: a thread-per-core load generator for Iceberg REST catalogs.
