//! The CSI node plugin: per-volume keys and CSRs, CertificateRequests as the pod, files into the pod.
