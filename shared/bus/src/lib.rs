//! JetStream bus: streams, publishing, consumer runner, claim check, trace propagation.
