"""Releases and campaigns: uploads, downloads, the pure rollout core, the runner, balena."""
