//! Strict SPIFFE ID parsing and ID templates (no Kubernetes, gRPC or HTTP dependencies).
