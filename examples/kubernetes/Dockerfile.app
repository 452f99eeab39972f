# The application image of deployment.yaml: the application's own image plus the static wrapper
# binary. Nothing else is needed from the wrapper's image (it holds that one file).
#
#   docker buildx build -f Dockerfile.app --platform linux/amd64,linux/arm64 \
#       -t registry.example.com/billing-cron:1.2-eae .
#
# Without a container engine: download etcd-await-election-linux-<arch> from the release page and
# COPY it in instead of the first stage.

FROM registry.example.com/etcd-await-election:0.2.0 AS eae

FROM registry.example.com/billing-cron:1.2
COPY --from=eae /etcd-await-election /usr/local/bin/etcd-await-election
# The wrapper first, then the application's own command. It is PID 1: it forwards SIGTERM to the
# application and reaps orphans (no tini needed). Set ETCD_AWAIT_ELECTION_* at run time; with
# none of LOCK_NAME, IDENTITY and ENDPOINTS set, the application runs at once, unelected.
ENTRYPOINT ["/usr/local/bin/etcd-await-election", "--"]
CMD ["/usr/bin/billing-cron", "--serve"]
