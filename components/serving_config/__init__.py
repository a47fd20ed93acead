"""ServingConfig: the one writer of models.config, after every servable's pusher."""
