"""What gateways send and what is sent to them: the link, its streams, routing, devices."""
