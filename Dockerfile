# engage on Debian 12: build stage with the -dev packages, slim runtime stage.
FROM debian:12 AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config librdkafka-dev libavro-dev librocksdb-dev \
      libroaring-dev libjansson-dev libxxhash-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY src ./src
COPY schemas ./schemas
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j"$(nproc)" --target engage

FROM debian:12-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
      librdkafka1 libavro23 librocksdb7.8 libroaring0 libjansson4 libxxhash0 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/engage /usr/local/bin/engage
COPY schemas /usr/share/engage/schemas
COPY config/engage.conf.example /etc/engage/engage.conf
WORKDIR /usr/share/engage
VOLUME /var/lib/engage
ENTRYPOINT ["engage"]
CMD ["run", "-c", "/etc/engage/engage.conf", "-X", "state.dir=/var/lib/engage"]
