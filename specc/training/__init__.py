"""Training: the run's data (`data`, `sources`, `samples`, `synthetic`), where output meets target
(`targets`), the shared loop (`loop`, `compiled`), its state on disk (`checkpoint`, `metrics`,
`lock`), several processes (`distributed`) and the driver (`session`)."""
