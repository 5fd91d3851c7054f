"""Pendra's benchmarks (not tests): ``bash scripts/bench.sh`` or ``python -m bench --help``.

One module per figure (latency, throughput, streaming, embeddings, guarantees, discovery, fleet,
footprint, strangers), over real processes and sockets on 127.0.0.1; ``versus`` measures LiteLLM's
proxy (``litellm_proxy``, its own virtualenv) with the same load; ``profile`` records where the
control plane spends its time. Results and the machine they ran on go to ``docs/performance.md``.
"""
