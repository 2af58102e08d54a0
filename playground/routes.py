"""The (prefix, viewset, basename) triples this app registers on the one API router.

`playground/templates` list routes (compare, bulk) are actions of the template viewset;
`playground/categories` and `playground/executions` are their own viewsets.
"""

from .views import (
    ArtifactViewSet,
    ChatCompletionViewSet,
    GatewayCallViewSet,
    LanguageModelViewSet,
    OrchestrateViewSet,
    OrchestrationRunViewSet,
    OrchestrationTemplateViewSet,
    ProjectViewSet,
    PromptExecutionViewSet,
    PromptTemplateViewSet,
    TemplateCategoryViewSet,
    WorkflowJobViewSet,
)

routes = [
    ("chat/completions", ChatCompletionViewSet, "chat-completion"),
    ("gateway/models", LanguageModelViewSet, "gateway-model"),
    ("gateway/calls", GatewayCallViewSet, "gateway-call"),
    ("playground/templates", PromptTemplateViewSet, "prompt-template"),
    ("playground/categories", TemplateCategoryViewSet, "template-category"),
    ("playground/executions", PromptExecutionViewSet, "prompt-execution"),
    ("projects", ProjectViewSet, "project"),
    # Before `orchestration`, whose run ids are UUIDs (so "templates" is never one).
    ("orchestration/templates", OrchestrationTemplateViewSet, "orchestration-template"),
    ("orchestrate", OrchestrateViewSet, "orchestrate"),
    ("orchestration", OrchestrationRunViewSet, "orchestration-run"),
    ("workflows", WorkflowJobViewSet, "workflow-job"),
    ("artifacts", ArtifactViewSet, "artifact"),
]
