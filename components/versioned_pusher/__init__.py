"""VersionedPusher: publishes blessed models as atomic integer versions for TF Serving."""
