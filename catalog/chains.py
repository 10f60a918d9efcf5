"""Prompt chains of this deployment and the corpora they retrieve from."""

from mallard.llm.chains import Chain, Corpus, PromptStep, RetrieveStep, StepPolicy, package_file

HELPCENTRE = Corpus(
    name="helpcentre",
    path=package_file("mallard.sample_world", "helpcentre/articles.jsonl"),
    id_field="article_id",
    title_field="title",
    text_field="body",
)

support_assistant = Chain(
    name="support_assistant",
    description="Pondstream support: retrieve help-centre articles, then answer with the support_assistant prompt.",
    inputs=("question",),
    steps=(
        RetrieveStep(
            name="retrieve", corpus="helpcentre", query="{{ inputs.question }}", k=2, max_chars=900
        ),
        PromptStep(
            name="answer",
            prompt="support_assistant",
            label="live",
            variables={
                "question": "{{ inputs.question }}",
                "context": "{{ steps.retrieve.output.context }}",
            },
            retrieval="retrieve",
            trace_input="{{ inputs.question }}",
            policy=StepPolicy(timeout_s=180, max_attempts=2),
        ),
    ),
    output="{{ steps.answer.output }}",
)

CHAINS = {chain.name: chain for chain in (support_assistant,)}
CORPORA = (HELPCENTRE,)
