"""`sglang.test.runners` names used by the peer test files.

`TEST_RERANK_QUERY_DOCS`: rerank inputs (a query and its documents); the first entry has one
document, the second two, as the rerank tests expect. The texts are this shim's own.
"""

TEST_RERANK_QUERY_DOCS = [
    {
        "query": "Which planet is closest to the sun?",
        "documents": [
            "Mercury is the smallest planet and the one nearest the sun.",
        ],
    },
    {
        "query": "How do plants make food?",
        "documents": [
            "Plants turn light, water and carbon dioxide into sugar by photosynthesis.",
            "The Rhine flows from the Alps to the North Sea.",
        ],
    },
]
