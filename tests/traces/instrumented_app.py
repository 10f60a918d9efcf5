"""An application with no Mallard code: the stock OpenTelemetry SDK, its OTLP/HTTP exporter and
the openai-v2 instrumentation around the `openai` client. Where the spans go is only the
exporter's standard configuration, from the environment:

    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:8000/v1/otlp/v1/traces
    OTEL_EXPORTER_OTLP_TRACES_HEADERS=Authorization=Bearer%20mk_…
    OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental
    OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=SPAN_ONLY

    python tests/traces/instrumented_app.py OPENAI_BASE_URL QUESTION

It answers one question inside a request span and prints the trace id.
"""

from __future__ import annotations

import sys

import openai
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def main() -> None:
    base_url, question = sys.argv[1], sys.argv[2]
    provider = TracerProvider(resource=Resource.create({"service.name": "support-app"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    OpenAIInstrumentor().instrument()
    client = openai.OpenAI(base_url=base_url, api_key="not-needed")
    tracer = trace.get_tracer("support-app")
    with tracer.start_as_current_span("answer question") as span:
        span.set_attribute("user.id", "cust-42")
        span.set_attribute("session.id", "s-7")
        reply = client.chat.completions.create(
            model="fake-model",
            messages=[
                {"role": "system", "content": "You answer Pondstream support questions."},
                {"role": "user", "content": question},
            ],
        )
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()  # exports what is left
    print(trace_id, reply.choices[0].message.content, sep="\t")


if __name__ == "__main__":
    main()
