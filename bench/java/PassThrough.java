// Kafka Streams exactly_once_v2 pass-through: the JVM peer of `processor` with an identity
// transform. Usage: java PassThrough BOOTSTRAP INPUT OUTPUT APPLICATION_ID STATE_DIR
import java.util.Properties;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;

public class PassThrough {
    public static void main(String[] args) throws InterruptedException {
        Properties props = StreamsApp.exactlyOnce(args);
        props.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
        props.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(args[1]).to(args[2]);
        StreamsApp.runUntilStopped(builder, props);
    }
}
