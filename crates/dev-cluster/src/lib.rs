//! An in-memory Kubernetes API server on 127.0.0.1 that speaks the real wire protocol.
