//! Plumbing shared by every role: kube client set-up, logging, health and metrics endpoints, shutdown.
