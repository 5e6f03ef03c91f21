"""The pure domain core: values in, values out. No Faust, Kafka, Redis or ClickHouse here."""
