// Kafka Streams exactly_once_v2 per-key count (RocksDB store, one stream thread), JSON out:
// the JVM peer of bench/state.py's processor count, with Kafka Streams' default record cache.
// Usage: java Count BOOTSTRAP INPUT OUTPUT APPLICATION_ID STATE_DIR
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;

public class Count {
    public static void main(String[] args) throws InterruptedException {
        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(args[1], Consumed.with(Serdes.String(), Serdes.String()))
               .groupByKey()
               .count()
               .toStream()
               .mapValues((key, n) -> "{\"key\": \"" + key + "\", \"count\": " + n + "}")
               .to(args[2], Produced.with(Serdes.String(), Serdes.String()));
        StreamsApp.runUntilStopped(builder, StreamsApp.exactlyOnce(args));
    }
}
