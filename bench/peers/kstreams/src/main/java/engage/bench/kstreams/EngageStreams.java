package engage.bench.kstreams;

import java.io.FileWriter;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListOffsetsOptions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.IsolationLevel;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Branched;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Named;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.SessionWindows;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.Windowed;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.SessionStore;
import org.apache.kafka.streams.state.Stores;

/**
 * engage's job written the Kafka Streams way: closed sessions with
 * SessionWindows + suppress(untilWindowCloses), exact DAU/WAU/MAU and
 * per-day session metrics, exactly_once_v2, RocksDB stores.
 * See README.md beside the pom for the design, tuning and the bounded-run
 * protocol; run with --help for the options.
 */
public final class EngageStreams {
    private EngageStreams() {}

    static final Map<String, String> DEFAULTS = new LinkedHashMap<>();
    static {
        DEFAULTS.put("bootstrap", "127.0.0.1:9092");
        DEFAULTS.put("app-id", "engage-kstreams");
        DEFAULTS.put("input", "user-actions");
        DEFAULTS.put("out-prefix", "ks-");
        DEFAULTS.put("state-dir", "/tmp/engage-kstreams-state");
        DEFAULTS.put("guarantee", StreamsConfig.EXACTLY_ONCE_V2);
        DEFAULTS.put("threads", "2");
        DEFAULTS.put("commit-ms", "1000");
        DEFAULTS.put("flush-ms", "1000");
        DEFAULTS.put("cache-mb", "64");
        DEFAULTS.put("rocksdb-cache-mb", "64");
        DEFAULTS.put("rocksdb-memtable-mb", "32");
        DEFAULTS.put("max-poll-records", "2000");
        DEFAULTS.put("gap-ms", "1800000");
        DEFAULTS.put("grace-ms", "300000");
        DEFAULTS.put("max-skew-ms", "3600000");
        DEFAULTS.put("min-ts-ms", "1262304000000");
        DEFAULTS.put("max-user-id-bytes", "256");
        DEFAULTS.put("session-retention-ms", String.valueOf(7 * 86400000L));
        DEFAULTS.put("flush-user", "__bench_flush__");
        DEFAULTS.put("until-done", "true");
        DEFAULTS.put("quiet-ms", "0");
        DEFAULTS.put("timeout-s", "7200");
        DEFAULTS.put("stats", "");
    }

    static Topology topology(Map<String, String> o) {
        long gap = Long.parseLong(o.get("gap-ms")), grace = Long.parseLong(o.get("grace-ms"));
        long flushMs = Long.parseLong(o.get("flush-ms"));
        String flushUser = o.get("flush-user"), prefix = o.get("out-prefix");
        long maxSkew = Long.parseLong(o.get("max-skew-ms")), minTs = Long.parseLong(o.get("min-ts-ms"));
        int maxUid = Integer.parseInt(o.get("max-user-id-bytes"));
        long sessionRetention = Long.parseLong(o.get("session-retention-ms"));

        StreamsBuilder b = new StreamsBuilder();
        b.addStateStore(Stores.keyValueStoreBuilder(Stores.persistentKeyValueStore(Processors.WATERMARK_STORE),
                Serdes.Integer(), Serdes.Long()).withCachingEnabled());
        b.addStateStore(Stores.keyValueStoreBuilder(Stores.persistentKeyValueStore(Processors.USER_DAYS_STORE),
                Serdes.String(), DayMath.USER_DAYS_SERDE).withCachingEnabled());
        b.addStateStore(Stores.keyValueStoreBuilder(Stores.persistentKeyValueStore(Processors.PENDING_STORE),
                Serdes.Integer(), DayMath.COUNTERS_SERDE).withCachingEnabled());

        // 1. validate, event time, lateness (keeps the key: no repartition)
        KStream<String, Model.Ev> checked = b
                .stream(o.get("input"), Consumed.with(Serdes.String(), Serdes.ByteArray()).withName("input"))
                .processValues(() -> new Processors.Validate(grace, maxSkew, minTs, maxUid), Named.as("validate"),
                        Processors.WATERMARK_STORE);
        Map<String, KStream<String, Model.Ev>> br = checked.split(Named.as("v-"))
                .branch((k, e) -> e.status == Model.DEAD, Branched.as("dead"))
                .branch((k, e) -> e.status == Model.LATE, Branched.as("late"))
                .defaultBranch(Branched.as("ok"));
        br.get("v-dead").mapValues(e -> e.raw)
                .to(prefix + "dead-letters", Produced.with(Serdes.String(), Serdes.ByteArray()));
        br.get("v-late").mapValues(e -> e.raw)
                .to(prefix + "late-events", Produced.with(Serdes.String(), Serdes.ByteArray()));
        KStream<String, Model.Ev> ok = br.get("v-ok");

        // 2. sessions: session windows, final results only
        KStream<Windowed<String>, Model.SessionAgg> closed = ok
                .groupByKey(Grouped.with(Serdes.String(), Model.EV_SERDE))
                .windowedBy(SessionWindows.ofInactivityGapAndGrace(Duration.ofMillis(gap), Duration.ofMillis(grace)))
                .aggregate(Model.SessionAgg::empty,
                        (user, e, agg) -> agg.add(e.idHash),
                        (user, a, c) -> Model.SessionAgg.merge(a, c),
                        Named.as("sessionize"),
                        Materialized.<String, Model.SessionAgg, SessionStore<Bytes, byte[]>>as("sessions")
                                .withKeySerde(Serdes.String()).withValueSerde(Model.SESSION_AGG_SERDE)
                                // segments = retention / 2: the default retention (gap + grace)
                                // opens a new RocksDB every 17.5 min of event time
                                .withRetention(Duration.ofMillis(sessionRetention)))
                .suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded())
                        .withName("until-session-closes"))
                .toStream(Named.as("closed-sessions"))
                .filter((w, agg) -> w != null && agg != null && !flushUser.equals(w.key()));
        closed.map((w, agg) -> KeyValue.pair(w.key(),
                        Codec.session(w.key(), w.window().start(), w.window().end(), agg.ids.length)))
                .to(prefix + "sessions", Produced.with(Serdes.String(), Serdes.ByteArray()));

        // 3. per-user days and per-partition day counters, then one aggregator
        KStream<String, Model.DayIn> events = ok.filter((k, e) -> !flushUser.equals(k))
                .mapValues(e -> Model.DayIn.event(e.ts));
        KStream<String, Model.DayIn> sessionsIn = closed.map((w, agg) -> KeyValue.pair(w.key(),
                Model.DayIn.session(w.window().start(), w.window().end(), agg.ids.length)));
        events.merge(sessionsIn, Named.as("day-inputs"))
                .process(() -> new Processors.DayPartials(flushMs), Named.as("day-partials"),
                        Processors.USER_DAYS_STORE, Processors.PENDING_STORE)
                .groupByKey(Grouped.with("day-deltas", Serdes.String(), DayMath.BUCKETS_SERDE))
                .reduce(DayMath.Buckets::plus, Named.as("day-totals"),
                        Materialized.<String, DayMath.Buckets, KeyValueStore<Bytes, byte[]>>as("day-totals")
                                .withKeySerde(Serdes.String()).withValueSerde(DayMath.BUCKETS_SERDE))
                .toStream()
                .flatMap((k, totals) -> totals.daily())
                .to(prefix + "daily-metrics", Produced.with(Serdes.String(), Serdes.ByteArray()));
        return b.build();
    }

    static Properties streamsProps(Map<String, String> o, Map<String, String> extra) {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, o.get("app-id"));
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, o.get("bootstrap"));
        p.put(StreamsConfig.STATE_DIR_CONFIG, o.get("state-dir"));
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, o.get("guarantee"));
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, o.get("threads"));
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, o.get("commit-ms"));
        p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, Long.parseLong(o.get("cache-mb")) << 20);
        p.put(StreamsConfig.ROCKSDB_CONFIG_SETTER_CLASS_CONFIG, BoundedRocksDB.class);
        p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.MAX_POLL_RECORDS_CONFIG), o.get("max-poll-records"));
        p.put(StreamsConfig.producerPrefix(ProducerConfig.LINGER_MS_CONFIG), 10);
        p.put(StreamsConfig.producerPrefix(ProducerConfig.BATCH_SIZE_CONFIG), 256 * 1024);
        // Streams' EOS default is 10 s; on a busy 2-core machine a cold JVM's
        // first transactions can exceed it, and every abort replays work.
        p.put(StreamsConfig.producerPrefix(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG), 60000);
        p.putAll(extra);
        return p;
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> o = new LinkedHashMap<>(DEFAULTS);
        Map<String, String> extra = new TreeMap<>();
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (a.equals("--help") || a.equals("-h")) {
                System.out.println("usage: java -jar engage-kstreams-peer.jar [--NAME VALUE]... [--prop k=v]...");
                DEFAULTS.forEach((k, v) -> System.out.println("  --" + k + " (default " + v + ")"));
                System.out.println("  --prop k=v   any StreamsConfig / client property (repeatable)");
                System.out.println("  --describe   print the topology and exit");
                return;
            }
            if (a.equals("--describe")) {
                System.out.println(topology(o).describe());
                return;
            }
            if (!a.startsWith("--") || i + 1 >= args.length) throw new IllegalArgumentException("bad argument " + a);
            String k = a.substring(2), v = args[++i];
            if (k.equals("prop")) {
                int eq = v.indexOf('=');
                extra.put(v.substring(0, eq), v.substring(eq + 1));
            } else if (o.containsKey(k)) {
                o.put(k, v);
            } else {
                throw new IllegalArgumentException("unknown option --" + k);
            }
        }
        BoundedRocksDB.configure(Long.parseLong(o.get("rocksdb-cache-mb")) << 20,
                Long.parseLong(o.get("rocksdb-memtable-mb")) << 20);
        long quietMs = Long.parseLong(o.get("quiet-ms"));
        if (quietMs <= 0) {
            quietMs = Math.max(3000, 3 * Long.parseLong(o.get("commit-ms")) + Long.parseLong(o.get("flush-ms")));
        }
        Topology topo = topology(o);
        Properties props = streamsProps(o, extra);
        String prefix = o.get("out-prefix"), input = o.get("input");
        List<String> outputs = List.of(prefix + "sessions", prefix + "daily-metrics", prefix + "dead-letters",
                prefix + "late-events");

        Properties ap = new Properties();
        ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, o.get("bootstrap"));
        try (Admin admin = Admin.create(ap)) {
            int parts = admin.describeTopics(List.of(input)).allTopicNames().get().get(input).partitions().size();
            Set<String> existing = admin.listTopics().names().get();
            List<NewTopic> create = new ArrayList<>();
            for (String t : outputs) {
                if (!existing.contains(t)) {
                    create.add(new NewTopic(t, t.endsWith("daily-metrics") ? 1 : parts, (short) 1));
                }
            }
            if (!create.isEmpty()) admin.createTopics(create).all().get();
            Map<TopicPartition, Long> inputEnd = endOffsets(admin, input, parts);

            long jvmStart = ManagementFactory.getRuntimeMXBean().getStartTime();
            KafkaStreams streams = new KafkaStreams(topo, props);
            final Throwable[] failure = {null};
            streams.setUncaughtExceptionHandler(ex -> {
                failure[0] = ex;
                ex.printStackTrace();
                return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
            });
            long t0 = System.currentTimeMillis();
            streams.start();
            if (!Boolean.parseBoolean(o.get("until-done"))) {
                Runtime.getRuntime().addShutdownHook(new Thread(streams::close));
                return;
            }
            // Bounded run: done when every input partition's committed offset
            // reached the end offset taken at start, and neither the group's
            // committed offsets (input and repartition topics) nor the output
            // topics' end offsets changed for quiet-ms.
            long deadline = t0 + Long.parseLong(o.get("timeout-s")) * 1000;
            long lastChange = t0, inputDoneAt = -1;
            String lastSig = "";
            String status = "timeout";
            Map<TopicPartition, Long> outEndPrev = Map.of();
            while (System.currentTimeMillis() < deadline) {
                Thread.sleep(200);
                if (failure[0] != null || streams.state() == KafkaStreams.State.ERROR
                        || streams.state() == KafkaStreams.State.NOT_RUNNING) {
                    status = "failed";
                    break;
                }
                Map<TopicPartition, OffsetAndMetadata> committed = admin
                        .listConsumerGroupOffsets(o.get("app-id")).partitionsToOffsetAndMetadata().get();
                boolean inputDone = true;
                for (Map.Entry<TopicPartition, Long> e : inputEnd.entrySet()) {
                    OffsetAndMetadata c = committed.get(e.getKey());
                    if (c == null || c.offset() < e.getValue()) inputDone = false;
                }
                Map<TopicPartition, Long> outEnd = new HashMap<>();
                for (String t : outputs) outEnd.putAll(endOffsets(admin, t, -1));
                String sig = new TreeMap<>(committed.entrySet().stream().collect(Collectors.toMap(
                        e -> e.getKey().toString(), e -> e.getValue().offset()))).toString()
                        + new TreeMap<>(outEnd.entrySet().stream().collect(Collectors.toMap(
                        e -> e.getKey().toString(), Map.Entry::getValue))).toString();
                long now = System.currentTimeMillis();
                if (!sig.equals(lastSig)) {
                    lastSig = sig;
                    lastChange = now;
                }
                if (inputDone && inputDoneAt < 0) inputDoneAt = now;
                if (inputDone && now - lastChange >= quietMs) {
                    status = "done";
                    break;
                }
                outEndPrev = outEnd;
            }
            long tEnd = System.currentTimeMillis();
            streams.close(Duration.ofSeconds(60));
            Map<String, Object> stats = new LinkedHashMap<>();
            stats.put("status", status);
            stats.put("jvm_start_to_streams_start_s", (t0 - jvmStart) / 1000.0);
            stats.put("wall_s", (lastChange - jvmStart) / 1000.0);
            stats.put("streams_s", (lastChange - t0) / 1000.0);
            stats.put("input_consumed_s", inputDoneAt < 0 ? null : (inputDoneAt - t0) / 1000.0);
            stats.put("detected_done_s", (tEnd - t0) / 1000.0);
            stats.put("quiet_ms", quietMs);
            stats.put("output_end_offsets", outEndPrev.toString());
            Map<String, Object> cfg = new TreeMap<>();
            props.forEach((k, v) -> cfg.put(k.toString(), v.toString()));
            stats.put("config", cfg);
            stats.put("options", o);
            String json = toJson(stats);
            System.out.println(json);
            if (!o.get("stats").isEmpty()) {
                try (FileWriter w = new FileWriter(o.get("stats"))) {
                    w.write(json + "\n");
                }
            }
            if (!status.equals("done")) System.exit(2);
        }
    }

    static Map<TopicPartition, Long> endOffsets(Admin admin, String topic, int parts) throws Exception {
        if (parts < 0) parts = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic).partitions().size();
        Map<TopicPartition, OffsetSpec> req = new HashMap<>();
        for (int p = 0; p < parts; p++) req.put(new TopicPartition(topic, p), OffsetSpec.latest());
        Map<TopicPartition, Long> out = new HashMap<>();
        admin.listOffsets(req, new ListOffsetsOptions(IsolationLevel.READ_COMMITTED)).all().get()
                .forEach((tp, info) -> out.put(tp, info.offset()));
        return out;
    }

    @SuppressWarnings("unchecked")
    static String toJson(Object x) {
        if (x == null) return "null";
        if (x instanceof Number || x instanceof Boolean) return x.toString();
        if (x instanceof Map) {
            StringBuilder sb = new StringBuilder("{");
            for (Map.Entry<Object, Object> e : ((Map<Object, Object>) x).entrySet()) {
                if (sb.length() > 1) sb.append(',');
                sb.append(toJson(e.getKey().toString())).append(':').append(toJson(e.getValue()));
            }
            return sb.append('}').toString();
        }
        String s = x.toString();
        StringBuilder sb = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') sb.append('\\').append(c);
            else if (c < 0x20) sb.append(String.format("\\u%04x", (int) c));
            else sb.append(c);
        }
        return sb.append('"').toString();
    }
}
