//! The approver: approves or denies CertificateRequests by the SPIFFE rules.
