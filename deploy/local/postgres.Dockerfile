# Local stand-in for the postgres image, from Debian's PostgreSQL 15 package, for hosts that reach no
# container registry (scripts/stack_images.sh). It honours what docker-compose.yml relies on: POSTGRES_USER,
# POSTGRES_PASSWORD and POSTGRES_DB, /docker-entrypoint-initdb.d/*.sql run once on an empty data volume,
# PGDATA=/var/lib/postgresql/data, pg_isready on the PATH.
ARG DEBIAN_IMAGE=autoft-local/debian:bookworm
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && pg_dropcluster 15 main \
    && mkdir -p /var/lib/postgresql/data /docker-entrypoint-initdb.d /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
USER postgres
STOPSIGNAL SIGINT
EXPOSE 5432
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
