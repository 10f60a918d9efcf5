"""LLM call traces: one schema shared by the client, the sample world and trace ingestion."""
