"""The task API (`/api/v1/digits`, `/images`, `/sentiment`, `/party`): friendly, typed
endpoints over the served models, through the same batchers as the raw protocols."""
