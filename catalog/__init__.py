"""This deployment's declarations: sources, entities, feature views, models, prompts, datasets.

Declarations only, no logic: adding one here grows the asset graph through the factories in
`assets/`.
"""
