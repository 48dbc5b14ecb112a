"""What the CLI and the SDK call: submission, cancel, queue control and views, deployments,
history export and views, pack artifacts."""
